"""Worker-side model helpers: sources, loading, dtypes, devices, determinism, out of memory."""
