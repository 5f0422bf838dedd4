"""The built-in transformers judge backend, by job: loading, planning the passes, running them."""
