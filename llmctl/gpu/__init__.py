"""GPU facts: probes of nvidia-smi/rocm-smi and memory estimates."""
