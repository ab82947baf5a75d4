"""infer layer of lssr-ray."""
