// Every layer kind with a WebGPU path registers its builder here.

import './block';
import './attention';
import './ffn';
import './gated_delta';
import './mamba';
import './lfm2';
import './minimax';
import './rwkv';
import './recurrent_gemma';
import './mla';
