"""The prediction API: BentoML service, model holder, request schemas and authentication."""
