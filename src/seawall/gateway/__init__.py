"""The gateway: an OpenAI-compatible proxy that puts seawall between an app and its model server."""
