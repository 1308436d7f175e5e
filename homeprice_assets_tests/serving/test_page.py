"""The web page in headless Chromium: pick a location, describe a home, see its price and what moved it."""

import tempfile
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service as ChromeService
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import Select, WebDriverWait

from homeprice_assets_tests.serving.conftest import Server

pytestmark = pytest.mark.slow
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


@pytest.fixture
def browser(tmp_path: Path):
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.fail("Chromium is missing: run `python -m homeprice_assets_tests.prepare` (make test does)")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1100,1000",
        f"--user-data-dir={tempfile.mkdtemp(dir=tmp_path)}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=ChromeService(str(CHROMEDRIVER)), options=options)
    yield driver
    driver.quit()


def test_value_a_home_in_the_browser(server: Server, browser, tmp_path: Path) -> None:
    browser.get(f"{server.url}/ui/")
    wait = WebDriverWait(browser, 60)
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#location option")) > 5)
    Select(browser.find_element(By.ID, "location")).select_by_value("79")
    area = browser.find_element(By.NAME, "living_sf")
    area.clear()
    area.send_keys("2400")
    browser.find_element(By.ID, "submit").click()
    price = wait.until(ec.visibility_of_element_located((By.ID, "price")))
    assert price.text.startswith("$") and int(price.text.strip("$").replace(",", "")) > 50_000
    interval = browser.find_element(By.ID, "interval").text
    assert "80% interval" in interval and "model v1" in interval
    drivers = browser.find_elements(By.CSS_SELECTOR, "#drivers tr")
    assert len(drivers) == 6
    assert any("living" in row.text for row in drivers)
    browser.save_screenshot(str(tmp_path / "page.png"))
    assert (tmp_path / "page.png").stat().st_size > 10_000

    # a refused request shows the server's reason instead of a price
    area.clear()
    area.send_keys("20")
    browser.execute_script("document.querySelector('[name=living_sf]').removeAttribute('min')")
    browser.find_element(By.ID, "submit").click()
    error = wait.until(ec.visibility_of_element_located((By.ID, "error")))
    assert "living_sf" in error.text
