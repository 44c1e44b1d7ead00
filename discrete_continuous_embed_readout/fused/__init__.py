"""The fused (chunked) linear-softmax paths: losses, per-token log-probs / entropies
and KL divergences computed chunk by chunk from the embeddings and a table's rows,
never holding the ``(tokens, vocab)`` logits. ``linear_softmax`` holds the autograd
ops, ``loss`` the objectives built on them, ``from_embeds`` the Readout's per-token
entry points. They take tensors (embeddings, rows, ids, masks), not modules. On CUDA
tensors the ops run the Triton kernels of ``triton_kernels`` (launched by
``triton_launch``, differentiated by ``kernel_ops``); ``backend`` decides."""
