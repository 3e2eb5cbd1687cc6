//! keygate's image for the Kubernetes profiles: built from ./Dockerfile
//! without attestations and tagged per build (kind: loaded into the
//! cluster), or the image the cluster profile was given
//! (`KEYRIG_KEYGATE_IMAGE`); and the overlay that is applied, with the pod
//! templates pointed at it and stamped with the overlay's digest.
//!
//! **A reused cluster runs this run's build and config**: the tag changes
//! with the image, the digest with the rendered overlay and the API
//! documents, and either change rolls the pods out.

use std::path::Path;

use anyhow::{Context, Result};
use serde_json::json;

use super::commands::{Commands, PROGRESS_EVERY};
use super::preflight::KubeTools;
use super::{KubeProfile, names};
use rig::base::run::RunDir;
use rig::say;

/// The image keygate's Deployment runs, and whether the node pulls it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeygateImage {
    pub image: String,
    pub pull_policy: &'static str,
}

/// What [`provide`] needs of `up`.
pub struct ImageInputs<'a> {
    pub cmds: &'a Commands,
    pub tools: &'a KubeTools,
    pub profile: KubeProfile,
    /// kind: the cluster to load the image into.
    pub kind_cluster: Option<&'a str>,
    /// env/k8s.toml `[images].keygate`, tagged again per build.
    pub base_tag: &'a str,
    pub root_dir: &'a Path,
    pub run: &'a RunDir,
}

/// The cluster profile's pushed image, or keygate built here: without
/// attestation manifests (with Docker's containerd image store `docker
/// save` names them without their content, and kind's import fails with
/// "content digest ...: not found"), into Docker's image store whichever
/// builder is the default, tagged per build, and on kind loaded from an
/// archive of that tag (what `kind load docker-image` does too, with its
/// output in this run's logs).
pub async fn provide(inputs: ImageInputs<'_>) -> Result<KeygateImage> {
    let ImageInputs {
        cmds,
        tools,
        profile,
        kind_cluster,
        base_tag,
        root_dir,
        run,
    } = inputs;
    let pushed = std::env::var("KEYRIG_KEYGATE_IMAGE")
        .ok()
        .filter(|v| !v.is_empty());
    if let (Some(image), KubeProfile::Cluster) = (pushed, profile) {
        say!("keygate: using the pushed image {image}");
        return Ok(KeygateImage {
            image,
            pull_policy: "IfNotPresent",
        });
    }
    let docker = tools
        .docker
        .as_deref()
        .context("preflight found no docker")?;
    say!("keygate: building its image (docker build; the log is docker-build.log)");
    let id_file = run.path().join("keygate-image.id");
    cmds.run_long(
        "docker-build",
        docker,
        [
            "build".as_ref(),
            "--provenance=false".as_ref(),
            "--sbom=false".as_ref(),
            "--load".as_ref(),
            "--iidfile".as_ref(),
            id_file.as_os_str(),
            "-t".as_ref(),
            base_tag.as_ref(),
            root_dir.as_os_str(),
        ],
        PROGRESS_EVERY,
    )
    .await?;
    let id = std::fs::read_to_string(&id_file)
        .with_context(|| format!("reading {}", id_file.display()))?;
    let built = build_tag(base_tag, &id)?;
    cmds.run("docker-tag", docker, ["tag", base_tag, built.as_str()])
        .await?;
    if let (KubeProfile::Kind, Some(kind), Some(name)) =
        (profile, tools.kind.as_deref(), kind_cluster)
    {
        let archive = run.path().join("keygate-image.tar");
        cmds.run(
            "docker-save",
            docker,
            [
                "save".as_ref(),
                "-o".as_ref(),
                archive.as_os_str(),
                built.as_ref(),
            ],
        )
        .await?;
        cmds.run(
            "kind",
            kind,
            [
                "load".as_ref(),
                "image-archive".as_ref(),
                archive.as_os_str(),
                "--name".as_ref(),
                name.as_ref(),
            ],
        )
        .await?;
        let _ = std::fs::remove_file(&archive);
    }
    Ok(KeygateImage {
        image: built,
        pull_policy: "Never",
    })
}

/// Writes `<dir>/kustomization.yaml` over the overlay `base` (the mode's,
/// or the cluster profile's run overlay), on both profiles: keygate's
/// container runs `image` (kind: this build's tag, `Never`; cluster:
/// `KEYRIG_KEYGATE_IMAGE`, `IfNotPresent`), and the keygate and gateway pod
/// templates carry [`overlay_digest`], so a new image or a changed config
/// rolls them out in a reused cluster. Applied as it is: one rollout, where
/// a patch after the apply had the apply first roll keygate back to the
/// base's tag (a pod that cannot pull) and the patch roll it forward again.
pub fn write_stamped_overlay(
    dir: &Path,
    base: &Path,
    image: &KeygateImage,
    overlay_digest: &str,
) -> Result<()> {
    let KeygateImage { image, pull_policy } = image;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let annotations = json!({ OVERLAY_DIGEST_ANNOTATION: overlay_digest });
    let deployment = |name: &str, spec: serde_json::Value| {
        json!({
            "target": {"kind": "Deployment", "name": name},
            "patch": serde_yaml::to_string(&json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": name},
                "spec": {"template": spec},
            })).expect("a patch serializes"),
        })
    };
    let kustomization = json!({
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [super::cluster_vault::relative_path(dir, base)?.display().to_string()],
        "patches": [
            deployment(names::KEYGATE, json!({
                "metadata": {"annotations": annotations},
                "spec": {"containers": [
                    {"name": names::KEYGATE, "image": image, "imagePullPolicy": pull_policy}
                ]},
            })),
            deployment(names::GATEWAY, json!({"metadata": {"annotations": annotations}})),
        ],
    });
    let text = serde_yaml::to_string(&kustomization).context("writing the kustomization")?;
    let file = dir.join("kustomization.yaml");
    std::fs::write(
        &file,
        format!(
            "# Written by keyrig for this run (rig_k8s::image): keygate's image and the\n\
             # overlay's digest over {}.\n{text}",
            base.display()
        ),
    )
    .with_context(|| format!("writing {}", file.display()))
}

/// The pod-template annotation that holds [`overlay_digest`].
const OVERLAY_DIGEST_ANNOTATION: &str = "keyrig.dev/overlay-digest";

/// A digest of the rendered overlay and the API documents (ConfigMap
/// keygate-apis, applied beside it). keygate's and Envoy's configs and the
/// documents are ConfigMaps mounted by `subPath` and read at start, so a
/// change reaches running pods only through a new pod; the digest in their
/// pod templates makes a change roll them out in a reused cluster.
pub fn overlay_digest(
    rendered: &[serde_json::Value],
    groups: &[rig::contract::scenario::ApiGroup],
) -> Result<String> {
    use sha2::Digest;
    let mut digest = sha2::Sha256::new();
    digest.update(serde_json::to_string(rendered).context("serializing the rendered overlay")?);
    for group in groups {
        digest.update(group.file.to_string_lossy().as_bytes());
        digest.update(
            std::fs::read(&group.file)
                .with_context(|| format!("reading {}", group.file.display()))?,
        );
    }
    Ok(hex::encode(&digest.finalize()[..8]))
}

/// The per-build tag of `image` (`repo:tag`), from the image id `docker
/// build --iidfile` wrote (`sha256:<hex>`).
fn build_tag(image: &str, id: &str) -> Result<String> {
    let hex = id.trim().strip_prefix("sha256:").unwrap_or(id.trim());
    anyhow::ensure!(
        hex.len() >= 12 && hex.bytes().all(|b| b.is_ascii_hexdigit()),
        "docker build wrote an image id keyrig does not understand: {id:?}"
    );
    // A tag's colon comes after the last slash (a registry's port before it).
    let name_start = image.rfind('/').map_or(0, |i| i + 1);
    let (repo, tag) = match image[name_start..].rfind(':') {
        Some(i) => (&image[..name_start + i], &image[name_start + i + 1..]),
        None => (image, "dev"),
    };
    Ok(format!("{repo}:{tag}-{}", &hex[..12]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_build_gets_its_own_tag_from_its_image_id() {
        let id = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n";
        assert_eq!(
            build_tag("keyrig/keygate:dev", id).unwrap(),
            "keyrig/keygate:dev-0123456789ab"
        );
        assert_eq!(
            build_tag("localhost:5000/keygate", id).unwrap(),
            "localhost:5000/keygate:dev-0123456789ab"
        );
        let err = build_tag("keyrig/keygate:dev", "sha256:").unwrap_err();
        assert!(err.to_string().contains("image id"), "{err}");
    }

    #[test]
    fn the_overlay_digest_changes_with_any_rendered_field() {
        let config = |text: &str| {
            vec![
                json!({"kind": "ConfigMap", "metadata": {"name": "keygate-config"},
                        "data": {"keygate.yaml": text}}),
            ]
        };
        let a = overlay_digest(&config("cache:\n  positive_ttl: 5s\n"), &[]).unwrap();
        assert_eq!(
            a,
            overlay_digest(&config("cache:\n  positive_ttl: 5s\n"), &[]).unwrap()
        );
        assert_ne!(
            a,
            overlay_digest(&config("cache:\n  positive_ttl: 6s\n"), &[]).unwrap()
        );
        assert_eq!(a.len(), 16);
        // And with the API documents, which keygate reads at start too.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("billing-api.yaml");
        std::fs::write(&file, "openapi: 3.0.0\n").unwrap();
        let group = rig::contract::scenario::ApiGroup {
            file: file.clone(),
            ..rig::contract::scenario::load_default_apis()
                .unwrap()
                .remove(0)
        };
        let with = overlay_digest(&config("x"), std::slice::from_ref(&group)).unwrap();
        std::fs::write(&file, "openapi: 3.1.0\n").unwrap();
        assert_ne!(with, overlay_digest(&config("x"), &[group]).unwrap());
    }

    /// The applied overlay, rendered by the pinned kubectl over each mode's:
    /// keygate runs the given image with its pull policy, both pod templates
    /// carry the digest, and nothing else differs from the mode's rendering.
    #[test]
    fn the_stamped_overlay_changes_only_the_image_and_the_digest() {
        let kubectl = super::super::pinned_tool("kubectl");
        let image = KeygateImage {
            image: "keyrig/keygate:dev-0123456789ab".into(),
            pull_policy: "Never",
        };
        let runs = rig::base::paths::rig_dir();
        std::fs::create_dir_all(&runs).unwrap();
        for mode in ["inline", "existing-secret", "external-secret"] {
            let base = rig::base::paths::scenarios_dir().join("k8s").join(mode);
            let mut expected = manifests::render_overlay(&kubectl, &base).unwrap();
            let dir = tempfile::tempdir_in(&runs).unwrap();
            write_stamped_overlay(dir.path(), &base, &image, "00ff00ff00ff00ff").unwrap();
            let stamped = manifests::render_overlay(&kubectl, dir.path()).unwrap();

            for object in &mut expected {
                if object["kind"] != "Deployment" {
                    continue;
                }
                let name = object["metadata"]["name"].as_str().unwrap().to_owned();
                let template = &mut object["spec"]["template"];
                if name == names::KEYGATE || name == names::GATEWAY {
                    let metadata = template["metadata"].as_object_mut().unwrap();
                    let annotations = metadata.entry("annotations").or_insert(json!({}));
                    annotations[OVERLAY_DIGEST_ANNOTATION] = json!("00ff00ff00ff00ff");
                }
                if name == names::KEYGATE {
                    let container = &mut template["spec"]["containers"][0];
                    assert_eq!(container["name"], names::KEYGATE);
                    container["image"] = json!(image.image);
                    container["imagePullPolicy"] = json!(image.pull_policy);
                }
            }
            assert_eq!(
                serde_json::to_string_pretty(&stamped).unwrap(),
                serde_json::to_string_pretty(&expected).unwrap(),
                "{mode}"
            );
        }
    }
}
