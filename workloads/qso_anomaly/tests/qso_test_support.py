"""Helpers shared by the qso_anomaly tests."""

from qso_anomaly.models.spec import ModelSpec

#: A tiny spec so that tests train in seconds on 2 shared CPU cores.
TINY = ModelSpec.ci().with_(channels=(4, 8, 8), decoder_mlp=(16, 32), n_rest=512,
                            encoder_mlp=(16,), latent_dim=4, density_components=2,
                            batch_size=32)
