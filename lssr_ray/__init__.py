"""lssr-ray: 30 m Landsat / HLS super-resolved to 10 m with LSSR, and crop-type maps, on Ray.

Importing the package is cheap: torch, ray, rasterio and the rest load only in the modules
that need them.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
