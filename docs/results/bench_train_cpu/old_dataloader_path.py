import time, torch, numpy as np
torch.set_num_threads(1)
from torch.utils.data import DataLoader
from allnc_train.data import TensorImages, image_transform, lt_class_counts
from allnc_train.data.samplers import ClassAwareSampler
counts = lt_class_counts(5000, 10, 100)
labels = np.repeat(np.arange(10), counts)
images = torch.randint(0, 256, (len(labels), 3, 32, 32), dtype=torch.uint8)
t = image_transform("cifar10", True, "standard", 32)
for name, views, rebal in (("ce", None, False), ("allnc", 2, True)):
    conv = DataLoader(TensorImages(images, labels, t, views), batch_size=128, sampler=ClassAwareSampler(labels, counts, "instance", 0, 0))
    rb = DataLoader(TensorImages(images, labels, t, 1), batch_size=128, sampler=ClassAwareSampler(labels, counts, "reversed", 0, 1)) if rebal else None
    best = 0
    for rep in range(3):
        it = iter(conv); it2 = iter(rb) if rb else None
        tic = time.perf_counter(); n = 0
        for _ in range(8):
            x, y = next(it); n += len(y)
            if it2: next(it2)
        best = max(best, n / (time.perf_counter() - tic))
    print(name, "old DataLoader path, source images/s:", round(best))
