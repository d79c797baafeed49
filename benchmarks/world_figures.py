"""Figures for docs/world.md: projected cardiothoracic ratios per severity (10 seeds) and
pair locality per finding (5 seeds, 256x256 PA, moderate). Usage: python benchmarks/world_figures.py"""
import numpy as np
from scipy.ndimage import distance_transform_edt
from medcf.world.ct import load_chest_ct
from medcf.world.render import World, draw_acquisition, cardiothoracic_ratio
from medcf.world.pathology import LesionSpec, FINDING_SIDES, FINDING_ZONES
from medcf.vocab import *
w=World(load_chest_ct())
ctr={s:[] for s in ['none']+[x.value for x in Severity]}; ap=[]
for seed in range(10):
    r=w.render(draw_acquisition(seed, ViewPosition.PA, 256), LesionSpec(Finding.CARDIOMEGALY,None,None,Severity.SEVERE,seed=seed), tuple(Severity))
    ctr['none'].append(cardiothoracic_ratio(r.anatomy))
    for s in Severity: ctr[s.value].append(cardiothoracic_ratio(r.anatomy_factual[s]))
    ap.append(cardiothoracic_ratio(w.render(draw_acquisition(seed, ViewPosition.AP, 256)).anatomy))
print('CTR PA', {k:(round(np.mean(v),3), round(np.min(v),3), round(np.max(v),3)) for k,v in ctr.items()}, 'AP normal', round(np.mean(ap),3))
rows=[]
for f in Finding:
    sides=FINDING_SIDES[f]; zones=FINDING_ZONES[f]
    far40=[];far90=[];inside=[]
    for seed in range(5):
        spec=LesionSpec(f, sides[seed%len(sides)] if sides else None, zones[seed%len(zones)] if zones else None, Severity.MODERATE, seed=seed)
        r=w.render(draw_acquisition(seed, ViewPosition.PA, 256), spec)
        m=r.lesion_masks[Severity.MODERATE]; dist=distance_transform_edt(~m)*r.pixel_mm
        d=np.abs(r.factual[Severity.MODERATE]-r.counterfactual)
        far40.append((d[dist>40]>0.01).mean()); far90.append(d[dist>90].max() if (dist>90).any() else 0); inside.append(d[m].mean())
    print(f"| {f.value} | {np.mean(inside):.3f} | {np.mean(far40)*100:.1f}% | {np.max(far90):.4f} |")
