"""Show: figures (grids, overlays, side-by-side), the HTML tour and the microscope site. Rendering only."""
