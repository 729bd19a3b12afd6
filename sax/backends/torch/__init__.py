"""The torch backend: vision servables (vm.classify, vm.embed, vm.detect, vm.generate).

- `batcher`: one device thread per loaded model that batches concurrent requests per lane.
- `tasks`: loaded Hugging Face models (transformers, diffusers) and their batch functions.
- `tiny`: tiny random-weight model directories built in-process, the tests' twins.
"""

from sax.backends import require

require("torch", "transformers", "diffusers", "PIL")
