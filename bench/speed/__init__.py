"""How fast: ferkit against the peer `fer`, the app, the server, training."""
