"""The web page follows the served model, not Seattle: version on load, busiest location, no built-in
coordinates, labels with sales counts (real service, real model, headless Chromium)."""

import pytest
import requests
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import Select, WebDriverWait

from homeprice_assets_tests.serving.conftest import Server, registry, server  # noqa: F401 (fixtures)
from homeprice_assets_tests.serving.test_page import browser  # noqa: F401 (fixture)

pytestmark = pytest.mark.slow


def test_page_shows_the_model_and_its_locations_on_load(server: Server, browser) -> None:  # noqa: F811
    info = requests.post(f"{server.url}/model_info", json={}, timeout=30).json()
    locations = requests.post(f"{server.url}/locations", json={}, timeout=30).json()
    busiest = max(locations, key=lambda loc: loc["sales"])

    browser.get(f"{server.url}/ui/")
    wait = WebDriverWait(browser, 60)
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#location option")) == len(locations))
    # the model version is shown before any home is valued
    assert browser.find_element(By.ID, "model").text.startswith(f"model v{info['champion_version']}")
    select = Select(browser.find_element(By.ID, "location"))
    assert select.first_selected_option.get_attribute("value") == busiest["location"]
    assert f"{busiest['sales']:,} sales" in select.first_selected_option.text
    # no coordinates built into the page: empty unless the model supplies them
    latitude = browser.find_element(By.NAME, "latitude")
    if busiest.get("latitude") is None:
        assert latitude.get_attribute("value") == ""
    else:
        assert float(latitude.get_attribute("value")) == pytest.approx(busiest["latitude"])
    # the coordinate hint is the middle of the served model's own bounds (here Seattle's, from its data)
    bounds = info["bounds"]
    middle = (bounds["min_latitude"] + bounds["max_latitude"]) / 2
    assert float(latitude.get_attribute("placeholder")) == pytest.approx(middle, abs=1e-3)
    assert float(latitude.get_attribute("min")) == pytest.approx(bounds["min_latitude"])

    browser.find_element(By.ID, "submit").click()
    price = wait.until(ec.visibility_of_element_located((By.ID, "price")))
    assert price.text.startswith(info.get("currency_symbol", "$"))
    units = {e.text for e in browser.find_elements(By.CSS_SELECTOR, ".area-unit")}
    assert units == {info.get("area_unit", "sq ft")}
