"""From servers to sites: generated nodes rolled up into racks, rows and a facility."""
