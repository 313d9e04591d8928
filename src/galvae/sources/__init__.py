"""Sources: everything that turns survey files and catalogues into observed spectra with properties.

- :mod:`galvae.sources.sdss`      read SDSS spec / spec-lite files (one or many)
- :mod:`galvae.sources.download`  fetch spec-lite files from the SDSS Science Archive Server
- :mod:`galvae.sources.catalogs`  GSWLC-2, MPA-JHU and specObj tables, joined on (plate, mjd, fiber)
- :mod:`galvae.sources.mock`      a bagpipes mock survey written in the same formats
"""
