"""model layer of lssr-ray: LSSR (frozen SD + LoRA, aux fusion, SAR head), losses, metrics.

Modules (import them directly; nothing heavy is imported here):
``base`` (load the SD folder, local or s3://), ``adapters`` (LoRA), ``aux`` (DEM / land cover /
month cross-attention), ``sar`` (SAR head), ``lssr`` (LSSRModel, LSSRPipeline, pre/post-processing),
``normalize`` (fixed unit scalings), ``losses``, ``metrics``.
"""
