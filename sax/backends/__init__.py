"""Engine adapters behind the servable interface: vllm, jax."""
