"""Random-weight builds of the real architectures the services host, made offline.

One module per thing it builds: ``tokenizer`` (the locally trained Qwen-style BPE), one module
per model family (``qwen_image_edit``, ``qwen3_vl``, ...). A ``tiny`` build is saved to a folder
once and loaded back through ``from_pretrained``; a full-size build is made on the device. Nothing
here is imported by a service unless its model source is a built-in one.
"""
