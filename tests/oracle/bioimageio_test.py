"""bioimage.io's own model test (bioimageio.core.test_model) on a package folder or zip:
spec validation, reproduction of the test output from the test input with onnxruntime,
and inference at other input sizes. Prints one line per check; exit 1 unless passed.

  python bioimageio_test.py PACKAGE (rdf.yaml, folder or zip)
"""
import sys

from bioimageio.core import test_model

summary = test_model(sys.argv[1])
for d in summary.details:
    print(d.status, "|", d.name, "|", "; ".join(e.msg[:500] for e in d.errors))
print("STATUS", summary.status)
sys.exit(0 if summary.status == "passed" else 1)
