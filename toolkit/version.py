"""The toolkit's version, in a module of its own so that anything can record it without importing the
package's public API."""

__version__ = "0.2.0"
