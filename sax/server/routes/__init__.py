"""The model server's HTTP routes, one router per API: `data` (Saxml's ``lm.*``/``vm.*``),
`openai` (the OpenAI-compatible subset) and `status` (status, probes, metrics). `sax.model_app`
composes them."""
