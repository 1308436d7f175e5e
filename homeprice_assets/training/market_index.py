"""Import shim: the market index lives in ``homeprice_model.market_index`` (logged with the model).

Kept so that models pickled before the move, whose index was pickled by reference as
``homeprice_assets.training.market_index.MarketIndex`` (and ``IndexParams``), keep loading: unpickling
them yields today's classes. Do not remove while such versions may be served or rolled back to.
"""

from homeprice_model.market_index import HEDONIC_COLUMNS, IndexParams, MarketIndex, _hat_basis

__all__ = ["HEDONIC_COLUMNS", "IndexParams", "MarketIndex", "_hat_basis"]
