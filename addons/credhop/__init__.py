"""credhop: moves credentials out of redirect Locations into headers, bound to one origin."""

__version__ = "0.1.0"
