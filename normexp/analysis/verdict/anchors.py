"""The published numbers the claims compare with (one run each in every source): data, not
analysis, so a claim's section and the Scales section read them from here and no claim module
imports another for them."""

# Ioffe & Szegedy 2015 put BN before the nonlinearity; the public CaffeNet benchmark on ImageNet
# (ducha-aiki/caffenet-benchmark): top-1 accuracy (%) with BN before and after ReLU. C3.
CAFFENET_TOP1 = {"pre": 47.4, "post": 49.9}

# Wu & He 2018 (Group Normalization), ResNet-50 on ImageNet, top-1 error (%) by images per GPU.
# C4, and C8 at 32 images per GPU.
GN_PAPER_ERROR_BY_BATCH = {
    "batch": {32: 23.6, 16: 23.7, 8: 24.8, 4: 27.3, 2: 34.7},
    "group": {32: 24.1, 16: 24.2, 8: 24.0, 4: 24.2, 2: 24.1},
}
GN_PAPER_ERROR_AT_32 = {"batch": 23.6, "group": 24.1, "layer": 25.3, "instance": 28.4}
# Its grouping table (Table 3), the same network at 32 images per GPU, top-1 error (%): a constant
# number of channels per group in every layer (1 is IN), and a constant number of groups
# (1 is LN). experiments/gn_grouping.yaml's prior and the report's anchor for it.
GN_PAPER_ERROR_BY_CHANNELS_PER_GROUP = {64: 24.4, 32: 24.5, 16: 24.2, 8: 24.3, 4: 24.8, 2: 25.1,
                                        1: 28.4}
GN_PAPER_ERROR_BY_GROUPS = {64: 24.6, 32: 24.1, 16: 24.6, 8: 24.4, 4: 24.6, 2: 24.7, 1: 25.3}

# Cooijmans et al. 2016 (Recurrent Batch Normalization): PTB characters, test bits per character.
# C7.
COOIJMANS_TEST_BPC = {"none": 1.38, "batch_per_step": 1.32}

# Zaremba et al. 2014 (Recurrent Neural Network Regularization), Table 1, "non-regularized LSTM":
# the small model (2 x 200 units, 20 steps unrolled, batch 20, SGD, 13 epochs, no dropout) on PTB
# words, perplexity. The paper profile of rnn_words is this model. C7.
ZAREMBA_SMALL_PERPLEXITY = {"valid": 120.7, "test": 114.5}

# Salimans & Kingma 2016 (Weight Normalization), Table 1: CIFAR-10 test error (%) of their CNN.
# C2.
SALIMANS_KINGMA_ERROR = {"none": 8.43, "BN": 8.05, "WN": 8.46, "WN + mean-only BN": 7.31}
