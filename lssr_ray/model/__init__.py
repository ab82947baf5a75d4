"""model layer of lssr-ray: LSSR (frozen SD + LoRA, aux fusion, SAR head), losses, metrics.

Modules (import them directly; nothing heavy is imported here):
``base`` (load the SD folder, local or s3://), ``adapters`` (LoRA), ``aux`` (DEM / land cover /
month cross-attention), ``sar`` (SAR head), ``lssr`` (LSSRModel), ``pipeline`` (LSSRPipeline,
inference on the batch contract), ``checkpoint`` (the one checkpoint resolver), ``fingerprint``
(the one folder hash), ``losses``, ``metrics``. The numpy batch contract and its scalings live
in :mod:`lssr_ray.data.batch` and :mod:`lssr_ray.data.normalize`.
"""
