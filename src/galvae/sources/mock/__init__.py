"""A mock SDSS × GSWLC survey: bagpipes galaxies observed like SDSS, with their true properties.

:func:`make_mock_survey` is the entry point (CLI: ``galvae mock``). The pieces, in the order a
galaxy meets them: :mod:`.population` (who is in the survey), :mod:`.render` (bagpipes rest-frame
spectrum), :mod:`.observe` (SDSS resolution, sky, noise, masks), :mod:`.write` (spec-lite files,
GSWLC-2 catalogue, truth table), :mod:`.survey` (seeds, workers, cache).
"""

from .population import DRIVEN_COLUMNS, GENERATING_PARAMETERS, TYPICAL_VALUES
from .survey import MockConfig, MockSurvey, make_mock_survey

__all__ = ["make_mock_survey", "MockSurvey", "MockConfig", "GENERATING_PARAMETERS", "TYPICAL_VALUES", "DRIVEN_COLUMNS"]
