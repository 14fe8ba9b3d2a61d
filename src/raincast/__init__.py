"""raincast: keeps a rain-tomorrow model fresh and serves it safely."""
