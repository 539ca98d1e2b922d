"""What the blog says, claim by claim: the Chinese original (quoted from the post,
"深度学习中的Normalization模型", 2019) and an English rendering."""

CLAIMS: dict[str, dict[str, str]] = {
    "C1": {
        "zh": "所有Normalization模型都采取了类似的步骤和过程，将神经元的激活值重整为均值为0方差为1的新数值，"
        "最大的不同在于计算统计量的神经元集合S的划分方法上。……所以RNN和MLP是无法进行Instance "
        "Normalization操作的。",
        "en": "All normalization models take the same steps, rescaling activations to mean 0 and "
        "variance 1; they differ only in how the set S of neurons used for the statistics is "
        "chosen. … So RNNs and MLPs cannot use Instance Normalization.",
    },
    "C2": {
        "zh": "另外一类是对神经网络中连接相邻隐层神经元之间的边上的权重进行规范化操作，比如Weight Norm就属于"
        "这一类。……L1正则的规范化目标是造成参数的稀疏化，……而L2正则的规范化目标是有效减小原始参数值的大小。",
        "en": "The other kind normalizes the weights on the edges between layers, e.g. Weight Norm. "
        "… L1 regularization aims to make the parameters sparse, … L2 regularization to make "
        "their values small.",
    },
    "C3": {
        "zh": "第一种是原始BN论文提出的，放在激活函数之前；另外一种是后续研究提出的，放在激活函数之后，"
        "不少研究表明将BN放在激活函数之后效果更好。",
        "en": "The original BN paper puts it before the activation; later work puts it after, and "
        "many studies find after the activation works better.",
    },
    "C4": {
        "zh": "如果Batch Size太小，则BN效果明显下降。……如果使用场景约束BatchSize必须设置很小，无疑此时考虑"
        "使用GroupNorm。",
        "en": "If the batch size is too small, BN degrades clearly. … When the batch size must be "
        "very small, GroupNorm is the choice.",
    },
    "C5": {
        "zh": "训练时和推理时统计量不一致",
        "en": "The statistics differ between training and inference.",
    },
    "C6": {
        "zh": "对于有些像素级图片生成任务来说，BN效果不佳。……如果是GAN等图片生成或图片内容改写类型的任务，"
        "可以优先尝试InstanceNorm。",
        "en": "For some pixel-level image generation tasks BN does poorly. … For GANs and other "
        "image generation or image rewriting tasks, try InstanceNorm first.",
    },
    "C7": {
        "zh": "从理论上讲，类似的BatchNorm操作也可以应用在RNN上，……但是各种实验证明其实这么做没什么用。"
        "……目前在RNN中貌似也只有LayerNorm相对有效。",
        "en": "In theory BatchNorm can be applied to RNNs too, … but experiments show it is of no "
        "use. … In RNNs only LayerNorm seems relatively effective.",
    },
    "C8": {
        "zh": "但Layer Normalization目前看好像也只适合应用在RNN场景下，在CNN等环境下效果是不如BatchNorm"
        "或者GroupNorm等模型的。",
        "en": "But Layer Normalization seems suited to RNNs only; in CNNs it is worse than "
        "BatchNorm or GroupNorm.",
    },
    "C9": {
        "zh": "原始的BN论文给出的解释是BN可以解决神经网络训练过程中的ICS（Internal Covariate Shift）问题，"
        "……不过后来经过学者研究发现BN和ICS并没有什么关系",
        "en": "The original BN paper explains BN as solving internal covariate shift (ICS), … but "
        "later research found BN has nothing to do with ICS.",
    },
    "C10": {
        "zh": "参数重整后的损失曲面比未重整前的参数损失曲面平滑许多(平滑程度用L-Lipschitz函数来评估)。",
        "en": "After this reparametrization the loss surface is much smoother than before "
        "(smoothness measured by L-Lipschitzness).",
    },
    "C11": {
        "zh": "对于RNN的神经网络结构来说，目前只有LayerNorm是相对有效的；如果是GAN等图片生成或图片内容改写类型"
        "的任务，可以优先尝试InstanceNorm；如果使用场景约束BatchSize必须设置很小，无疑此时考虑使用"
        "GroupNorm；而其它任务情形应该优先考虑使用BatchNorm。",
        "en": "For RNNs only LayerNorm is relatively effective; for GANs and image generation or "
        "rewriting, try InstanceNorm first; when the batch must be very small, use GroupNorm; "
        "otherwise prefer BatchNorm.",
    },
}
