"""Moved to ``homeprice_assets.ingest.status`` (month readiness lives beside the ingest code it describes).

Kept only until ``training/assets.py`` imports from the new place; nothing else imports this.
"""

from homeprice_assets.ingest.status import blocking_check_keys, month_status

__all__ = ["blocking_check_keys", "month_status"]
