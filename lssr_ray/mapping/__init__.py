"""mapping layer of lssr-ray."""
