"""train layer of lssr-ray."""
