"""A native JAX decoder-only LM engine: model, weights, sampling, sharding and continuous batching.

Modules: `config` (Llama-family config.json), `weights` (safetensors or random init), `model`
(the transformer as pure functions over a pytree of arrays), `sampling` (on-device token choice),
`mesh` (tensor-parallel placement), `detok` (incremental detokenization and stop strings),
`engine` (the slot-based continuous-batching engine that owns the device).
"""
