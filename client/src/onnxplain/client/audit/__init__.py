"""`onnxplain audit`: a folder or CSV of images through predict, explain and evaluate, resumable, with an HTML report.

sources (which images, labels, boxes) → runner (thread pool) → image_audit (one image's calls and files) → journal
(results.jsonl, atomic files) → summary (accuracy, confusion, mean maps, outliers) → report (one HTML file).
"""
