"""The demo paper-trading venue: the built-in upstream that keyplane's keys protect.

Wire it into an app with `venue_routes()` behind the auth middleware, `app.state.venue =
VenueState(VenueConfig())` and `app.state.clock` (a keyplane Clock).
"""

from keyplane.venue.balances import CoinBalance
from keyplane.venue.instruments import COINS, Instrument, InstrumentBook, default_instruments
from keyplane.venue.movements import Transfer, Withdrawal
from keyplane.venue.orders import Order, OrderNotFoundError, OrderRequest
from keyplane.venue.positions import Position
from keyplane.venue.routes import venue_routes
from keyplane.venue.state import VenueConfig, VenueState

__all__ = [
    "COINS",
    "CoinBalance",
    "Instrument",
    "InstrumentBook",
    "Order",
    "OrderNotFoundError",
    "OrderRequest",
    "Position",
    "Transfer",
    "VenueConfig",
    "VenueState",
    "Withdrawal",
    "default_instruments",
    "venue_routes",
]
