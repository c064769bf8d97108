"""The Keras 1 MNIST CNN of ../shared/corpus/keras1-mnist-cnn, rebuilt as factories for
``graft``: a channels-last Keras 3 model and a PyTorch model, with default layer names.

    graft transplant ../shared/corpus/keras1-mnist-cnn/mnist_cnn_th_keras_1_weights.h5 \\
        --into examples/mnist_models.py:keras_mnist -o out/mnist.weights.h5
    graft transplant ../shared/corpus/keras1-mnist-cnn/mnist_cnn_th_keras_1_weights.h5 \\
        --into examples/mnist_models.py:torch_mnist -o out/mnist.pt
    graft verify examples/mnist_models.py:keras_mnist examples/mnist_models.py:torch_mnist \\
        --weights-a out/mnist.weights.h5 --weights-b out/mnist.pt
"""

import os

os.environ.setdefault("KERAS_BACKEND", "torch")


def keras_mnist(classes=10):
    """``classes`` other than 10 gives a new head for transfer learning."""
    import keras

    L = keras.layers
    return keras.Sequential([
        keras.Input((28, 28, 1)),
        L.Conv2D(32, 3), L.Activation("relu"), L.Conv2D(32, 3), L.Activation("relu"),
        L.MaxPooling2D(2), L.Dropout(0.25), L.Flatten(),
        L.Dense(128), L.Activation("relu"), L.Dropout(0.5), L.Dense(int(classes)), L.Activation("softmax"),
    ])


def torch_mnist(classes=10):
    """``classes`` other than 10 gives a new head for transfer learning."""
    import torch

    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(1, 32, 3), nn.ReLU(), nn.Conv2d(32, 32, 3), nn.ReLU(),
        nn.MaxPool2d(2), nn.Dropout(0.25), nn.Flatten(),
        nn.Linear(32 * 12 * 12, 128), nn.ReLU(), nn.Dropout(0.5), nn.Linear(128, int(classes)),
        nn.Softmax(dim=1),
    ).eval()
