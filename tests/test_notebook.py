"""The Colab notebook runs top to bottom (its tiny CPU mode) and shows what it promises."""

import os

import nbclient
import nbformat
import pytest

from tests.helpers import ROOT

pytestmark = pytest.mark.slow  # A Jupyter kernel running the whole notebook.

NOTEBOOK = os.path.join(ROOT, 'notebooks', 'colab_tpu.ipynb')


def _text(cell) -> str:
  return ''.join(output.get('text', '') for output in cell.outputs)


def test_colab_notebook_runs_in_its_smoke_test_mode(tfds_data_dir, tmp_path, monkeypatch):
  workdir = tmp_path / 'run'
  monkeypatch.setenv('VAEGAN_NOTEBOOK_SMOKE_TEST', '1')
  monkeypatch.setenv('VAEGAN_NOTEBOOK_WORKDIR', str(workdir))
  monkeypatch.setenv('TFDS_DATA_DIR', tfds_data_dir)  # The digits, prepared once per session.
  notebook = nbformat.read(NOTEBOOK, as_version=4)
  nbclient.NotebookClient(
      notebook, timeout=600, kernel_name='python3', resources={'metadata': {'path': ROOT}}
  ).execute()

  code = [cell for cell in notebook.cells if cell.cell_type == 'code']
  assert '1 CPU device(s)' in _text(code[2])
  assert 'Trained to step 4.' in _text(code[3])
  assert sorted(p.name for p in (workdir / 'checkpoints').iterdir()) == ['2', '4']
  for cell in (code[4], code[6]):  # The training grid, then new samples from the checkpoint.
    assert any('image/png' in output.get('data', {}) for output in cell.outputs)
  assert 'Restored the checkpoint of step 4.' in _text(code[6])
