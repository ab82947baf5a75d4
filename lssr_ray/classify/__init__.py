"""classify layer of lssr-ray."""
