"""The offline CPU quickstart: data/prepare.py --input=pydoc, char-level, into data/pydoc, a test split held out."""
import os
import runpy
import sys

here = os.path.dirname(os.path.abspath(__file__))
sys.argv[1:1] = ['--input=pydoc', '--tokenizer=char', '--val_fraction=0.1', '--test_fraction=0.5', f'--out_dir={here}']
runpy.run_path(os.path.join(os.path.dirname(here), 'prepare.py'), run_name='__main__')
