"""The web listener: webmail, portal, client autoconfig, health."""
