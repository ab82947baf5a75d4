"""data layer of lssr-ray."""
