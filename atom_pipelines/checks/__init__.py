"""Every asset check, one module per asset family (``assets/<family>.py`` declares them; see README.md)."""
