"""tether: RLHF with a KL tether to a frozen reference.

The package is a stack of floors; a module imports its own part and lower floors
only (tests/test_layers.py reads every import, those inside functions too):

    __main__                       `python -m tether`
    cli                            parse arguments, build a config, call a pipeline
    pipelines                      sft, collect, rm, ppo, sweep, demo: orchestrate, checkpoint, log
    distributed / label            data-parallel replicas; the labeling web page
    worlds / analysis              built-in worlds and their gold; detectors, fits, plots, report
    models                         policies, reward models, value heads, LoRA (HF directories)
    rollout                        sampling engines, log-probs, masks after EOS
    algos / data                   pure tensor math; reading, validating, padding and collating data
    config / runlog                stage configs; metrics.jsonl and TensorBoard
    errors / io                    errors a user can act on; atomic file output
"""

__version__ = "0.1.0"
