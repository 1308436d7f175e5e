"""The replay: retraining policies compared month by month on the bundled sales, on the real machinery."""
