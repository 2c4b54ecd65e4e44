"""Code samples that apply an exported recipe with SparseML, per framework.

API (stable)::

    code_sample(framework, kind="integration", recipe_path="recipe.yaml", epochs=None) -> str
    FRAMEWORKS = ("pytorch", "keras", "tensorflow");  KINDS = ("integration", "training")

``integration`` is the few lines to add to an existing training loop;
``training`` is a complete script (data, model, loop, ONNX export) to adapt.
``tensorflow`` means ``sparseml.tensorflow_v1`` (TF 1.x graphs), ``keras``
means ``sparseml.keras`` (TF 2 Keras). Every sample is valid Python (a test
compiles them); none is run here (no torch / TF in this environment).
"""

from __future__ import annotations

from sparsify_tui.errors import UsageError

FRAMEWORKS = ("pytorch", "keras", "tensorflow")
KINDS = ("integration", "training")

_NAMES_NOTE = '''\
# The recipe's params are ONNX weight names unless it was exported with --name-map.
# SparseML matches them against the framework's parameter names: if it reports
# "All supplied parameter names ... not found", export again with a name map
# (JSON {"onnx_name": "framework_name"} or CSV onnx_name,framework_name).
'''


def _script(doc: str, pip: str, imports: list[str], body: str) -> str:
    """A sample's template: its docstring with the pip line, the names note, its imports, RECIPE_PATH, ``body``."""
    return f'"""{doc}\n\npip install {pip}\n"""\n{{note}}\n' + "\n".join(imports) + "\n\nRECIPE_PATH = {recipe!r}\n" + body


_PYTORCH_INTEGRATION = _script(
    'Add sparsification to an existing PyTorch training loop with SparseML.',
    '"sparseml[torch]"',
    ['from sparseml.pytorch.optim import ScheduledModifierManager'],
    '''\


def train(model, optimizer, train_loader, loss_fn, device="cpu"):
    # 1. wrap the optimizer: the manager applies the recipe's modifiers (pruning masks,
    #    learning-rate schedule, quantization) at the right steps of every epoch
    manager = ScheduledModifierManager.from_yaml(RECIPE_PATH)
    optimizer = manager.modify(model, optimizer, steps_per_epoch=len(train_loader))

    # 2. train for the recipe's number of epochs (manager.max_epochs), as usual
    for epoch in range(manager.max_epochs):
        model.train()
        for inputs, labels in train_loader:
            inputs, labels = inputs.to(device), labels.to(device)
            optimizer.zero_grad()
            loss = loss_fn(model(inputs), labels)
            loss.backward()
            optimizer.step()

    # 3. remove the hooks; the pruned weights stay zero
    manager.finalize(model)
    return model
''')

_PYTORCH_TRAINING = _script(
    'Train a sparse model with SparseML (complete PyTorch script; adapt the data and the model).',
    '"sparseml[torch]" torchvision',
    ['import torch', 'from torch.nn import CrossEntropyLoss', 'from torch.optim import SGD', 'from torch.utils.data import DataLoader', 'from torchvision import datasets, models, transforms', '', 'from sparseml.pytorch.optim import ScheduledModifierManager', 'from sparseml.pytorch.utils import ModuleExporter'],
    '''\
TRAIN_DIR = "data/train"  # ImageFolder layout: one directory per class
VAL_DIR = "data/val"
BATCH_SIZE = 64
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def loaders():
    norm = transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
    train = datasets.ImageFolder(TRAIN_DIR, transforms.Compose([
        transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip(), transforms.ToTensor(), norm]))
    val = datasets.ImageFolder(VAL_DIR, transforms.Compose([
        transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(), norm]))
    return (DataLoader(train, BATCH_SIZE, shuffle=True, num_workers=4),
            DataLoader(val, BATCH_SIZE, shuffle=False, num_workers=4))


def evaluate(model, loader):
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for inputs, labels in loader:
            outputs = model(inputs.to(DEVICE))
            correct += (outputs.argmax(1).cpu() == labels).sum().item()
            total += labels.numel()
    return correct / max(total, 1)


def main():
    train_loader, val_loader = loaders()
    model = models.resnet50(weights="DEFAULT").to(DEVICE)  # your (pretrained) model
    optimizer = SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)  # the recipe sets the LR
    loss_fn = CrossEntropyLoss()

    manager = ScheduledModifierManager.from_yaml(RECIPE_PATH)
    optimizer = manager.modify(model, optimizer, steps_per_epoch=len(train_loader))

    for epoch in range(manager.max_epochs):
        model.train()
        for inputs, labels in train_loader:
            inputs, labels = inputs.to(DEVICE), labels.to(DEVICE)
            optimizer.zero_grad()
            loss = loss_fn(model(inputs), labels)
            loss.backward()
            optimizer.step()
        print(f"epoch {{epoch}}: validation accuracy {{evaluate(model, val_loader):.4f}}")

    manager.finalize(model)
    ModuleExporter(model.cpu(), output_dir="sparse-model").export_onnx(torch.randn(1, 3, 224, 224))
    print("wrote sparse-model/model.onnx: profile it with `sparsify-tui new sparse-model/model.onnx`")


if __name__ == "__main__":
    main()
''')

_KERAS_INTEGRATION = _script(
    'Add sparsification to an existing Keras (TensorFlow 2) training with SparseML.',
    '"sparseml[tf_keras]"',
    ['from sparseml.keras.optim import ScheduledModifierManager'],
    '''\


def train(model, optimizer, loss, train_data, steps_per_epoch):
    manager = ScheduledModifierManager.from_yaml(RECIPE_PATH)
    # the manager returns a wrapped model and optimizer plus callbacks that update the masks
    model, optimizer, callbacks = manager.modify(model, optimizer, steps_per_epoch)
    model.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"])
    model.fit(train_data, epochs=manager.max_epochs, steps_per_epoch=steps_per_epoch, callbacks=callbacks)
    # strip the pruning wrappers; the pruned weights stay zero
    return manager.finalize(model)
''')

_KERAS_TRAINING = _script(
    'Train a sparse Keras model with SparseML (complete script; adapt the data and the model).',
    '"sparseml[tf_keras]"',
    ['import tensorflow as tf', '', 'from sparseml.keras.optim import ScheduledModifierManager', 'from sparseml.keras.utils import ModelExporter'],
    '''\
BATCH_SIZE = 64


def datasets():
    (x_train, y_train), (x_val, y_val) = tf.keras.datasets.cifar10.load_data()
    train = tf.data.Dataset.from_tensor_slices((x_train / 255.0, y_train)).shuffle(10000).batch(BATCH_SIZE).repeat()
    val = tf.data.Dataset.from_tensor_slices((x_val / 255.0, y_val)).batch(BATCH_SIZE)
    return train, val, len(x_train) // BATCH_SIZE


def main():
    train, val, steps_per_epoch = datasets()
    model = tf.keras.applications.ResNet50(weights=None, input_shape=(32, 32, 3), classes=10)  # your model
    optimizer = tf.keras.optimizers.SGD(learning_rate=0.1, momentum=0.9)
    loss = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=False)

    manager = ScheduledModifierManager.from_yaml(RECIPE_PATH)
    model, optimizer, callbacks = manager.modify(model, optimizer, steps_per_epoch)
    model.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"])
    model.fit(train, epochs=manager.max_epochs, steps_per_epoch=steps_per_epoch,
              validation_data=val, callbacks=callbacks)

    model = manager.finalize(model)
    ModelExporter(model, output_dir="sparse-model").export_onnx()
    print("wrote sparse-model/model.onnx")


if __name__ == "__main__":
    main()
''')

_TF_INTEGRATION = _script(
    'Add sparsification to an existing TensorFlow 1.x graph with SparseML (sparseml.tensorflow_v1).',
    '"sparseml[tf_v1]"',
    ['from sparseml.tensorflow_v1.optim import ScheduledModifierManager', 'from sparseml.tensorflow_v1.utils import tf_compat'],
    '''\


def train(graph, train_op, steps_per_epoch, feed_batch):
    """graph: your tf.Graph with the model and train_op built in it; feed_batch(step) -> feed_dict."""
    with graph.as_default():
        tf_compat.train.get_or_create_global_step()
        manager = ScheduledModifierManager.from_yaml(RECIPE_PATH)
        mod_ops, mod_extras = manager.create_ops(steps_per_epoch)
        with tf_compat.Session() as sess:
            sess.run(tf_compat.global_variables_initializer())
            manager.initialize_session(sess)
            for epoch in range(int(manager.max_epochs)):
                for step in range(steps_per_epoch):  # steps, not the batch size (the original sample's bug)
                    sess.run(train_op, feed_dict=feed_batch(step))
                    sess.run(mod_ops)
            manager.complete_graph()
    return graph
''')

_TF_TRAINING = _script(
    'Train a sparse TensorFlow 1.x model with SparseML (complete script; adapt the data and the model).',
    '"sparseml[tf_v1]"',
    ['import numpy as np', '', 'from sparseml.tensorflow_v1.optim import ScheduledModifierManager', 'from sparseml.tensorflow_v1.utils import GraphExporter, tf_compat'],
    '''\
BATCH_SIZE = 64
STEPS_PER_EPOCH = 100


def batches():
    while True:  # replace with your data
        x = np.random.rand(BATCH_SIZE, 224, 224, 3).astype(np.float32)
        y = np.random.randint(0, 1000, size=(BATCH_SIZE,))
        yield x, y


def build(inputs):
    net = tf_compat.layers.conv2d(inputs, 64, 7, strides=2, padding="same", activation=tf_compat.nn.relu)
    net = tf_compat.layers.max_pooling2d(net, 3, 2, padding="same")
    net = tf_compat.layers.conv2d(net, 128, 3, padding="same", activation=tf_compat.nn.relu)
    net = tf_compat.reduce_mean(net, axis=[1, 2])
    return tf_compat.layers.dense(net, 1000)


def main():
    with tf_compat.Graph().as_default() as graph:
        inputs = tf_compat.placeholder(tf_compat.float32, [None, 224, 224, 3], name="inputs")
        labels = tf_compat.placeholder(tf_compat.int64, [None], name="labels")
        logits = build(inputs)
        loss = tf_compat.losses.sparse_softmax_cross_entropy(labels, logits)
        global_step = tf_compat.train.get_or_create_global_step()

        manager = ScheduledModifierManager.from_yaml(RECIPE_PATH)
        mod_ops, mod_extras = manager.create_ops(STEPS_PER_EPOCH)
        learning_rate = mod_extras.get("learning_rate", 0.01)
        train_op = tf_compat.train.MomentumOptimizer(learning_rate, 0.9).minimize(loss, global_step=global_step)

        data = batches()
        with tf_compat.Session() as sess:
            sess.run(tf_compat.global_variables_initializer())
            manager.initialize_session(sess)
            for epoch in range(int(manager.max_epochs)):
                for step in range(STEPS_PER_EPOCH):
                    x, y = next(data)
                    sess.run(train_op, feed_dict={{inputs: x, labels: y}})
                    sess.run(mod_ops)
            manager.complete_graph()
            exporter = GraphExporter("sparse-model")
            exporter.export_pb(outputs=[logits])
            exporter.export_onnx(inputs=[inputs], outputs=[logits])
            print("wrote sparse-model/model.onnx")


if __name__ == "__main__":
    main()
''')

_TEMPLATES = {
    ("pytorch", "integration"): _PYTORCH_INTEGRATION,
    ("pytorch", "training"): _PYTORCH_TRAINING,
    ("keras", "integration"): _KERAS_INTEGRATION,
    ("keras", "training"): _KERAS_TRAINING,
    ("tensorflow", "integration"): _TF_INTEGRATION,
    ("tensorflow", "training"): _TF_TRAINING,
}


def code_sample(framework: str, kind: str = "integration", recipe_path: str = "recipe.yaml",
                mapped: bool = False) -> str:
    """Python source applying the recipe at ``recipe_path`` with SparseML for ``framework``."""
    fw = (framework or "").strip().lower()
    if fw in ("tf", "tensorflow_v1", "tf1"):
        fw = "tensorflow"
    if fw in ("torch",):
        fw = "pytorch"
    k = (kind or "").strip().lower()
    if fw not in FRAMEWORKS:
        raise UsageError(f"--framework must be one of {', '.join(FRAMEWORKS)}, got {framework!r}")
    if k not in KINDS:
        raise UsageError(f"--code-type must be one of {', '.join(KINDS)}, got {kind!r}")
    note = "" if mapped else _NAMES_NOTE
    return _TEMPLATES[(fw, k)].format(recipe=str(recipe_path), note=note)
