"""model layer of lssr-ray."""
