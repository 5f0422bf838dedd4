"""Client images: structure checked from the bytes, decoded safely, heavy decodes gated."""
