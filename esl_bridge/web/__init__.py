"""The browser side: the SDK, the web client page, and the routes that serve them."""
