"""Triton Python-backend programs shipped with the runtime (copied into model repositories)."""
