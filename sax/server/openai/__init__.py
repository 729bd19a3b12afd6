"""The OpenAI-compatible API of a model server: `protocol` (OpenAI's request and response
models) and one serving class per endpoint (``serving_*.py``) that the routes call."""
