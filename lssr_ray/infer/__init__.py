"""infer layer of lssr-ray: ``base`` (the Engine protocol, batching helpers, ``super_resolve``),
``factory`` (``make_engine``), the engines (``torch_engine``, ``ort_engine``, ``tensorrt_engine``,
``bicubic_engine``) and ``export`` (the ONNX graph)."""
