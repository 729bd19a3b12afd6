"""Shared fixtures: the GCS emulator (tests/gcs.py); the test process's vLLM mode.

vLLM servables compile their model by default (torch.compile, about a minute per new model and
settings on 2 cores). The tests start dozens of short-lived engines, so they run eager unless a
test asks otherwise (`SAX_VLLM_ENFORCE_EAGER`, inherited by the model servers they spawn);
`tests/vllm/test_compiled.py` serves a compiled engine.
"""

import os

os.environ.setdefault("SAX_VLLM_ENFORCE_EAGER", "1")

pytest_plugins = ["tests.gcs"]
