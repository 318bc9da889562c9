"""Write a TF1 Hub image feature-vector module from the command line: a network of a package's ``NETWORKS`` (with its
pretrained weights where it has them, else fresh variables), or a Keras Application with its trained weights.

Command line (the package holding the ``NETWORKS`` dict, and the hyperparameters its networks
declare as ``OPTIONS``, is a parameter, so this module knows no project)::

    python -m library.hub.write_module --networks_package project.networks --network small_cnn --output out/hub/small_cnn
    python -m project.networks --network efficientnet_lite0 --output out/hub/efficientnet_lite0  # ImageNet weights
    python -m library.hub.write_module --keras_application MobileNetV2 --weights mobilenet_v2.h5 --output out/hub/mnv2
    python -m library.hub.write_module --keras_application MobileNetV2 --alpha 0.35 --weights mnv2_035.h5 --output out/hub/mnv2_035
"""

import argparse
import importlib
import sys

from library.configuration.command_line import OneLineParser, positive
from library.hub import hub_module, keras_application
from library.tensorflow_env import import_tensorflow, use_graph_mode

tf = import_tensorflow()


def parser_of(prog, networks_package, network_options):
    """Command-line flags, with a flag for each hyperparameter the networks declare; errors are one line."""
    parser = OneLineParser(
        prog=prog, allow_abbrev=False,
        description="Write a TF1 Hub image feature-vector module: a network of a package's NETWORKS with its "
                    "pretrained weights where it has them, else fresh (random) variables, or a Keras Application "
                    "with its trained weights.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--network", help="name of a network in the package's NETWORKS (its pretrained weights, "
                        "else random ones)")
    source.add_argument("--keras_application",
                        help="a tf.keras.applications model, e.g. MobileNetV2, ResNet50, EfficientNetB0")
    parser.add_argument("--weights", help="--keras_application: its .h5 weights file, or imagenet (downloads)")
    parser.add_argument("--alpha", type=positive(float),
                        help="--keras_application: the width multiplier of one that has it (MobileNet, MobileNetV2, "
                             "MobileNetV3*), as its weights were saved with (default: the application's, 1.0)")
    parser.add_argument("--output", required=True,
                        help="module directory to write (an earlier module there is replaced)")
    parser.add_argument("--image_size", type=positive(int), default=224, help="input height and width (default: 224)")
    parser.add_argument("--networks_package", default=networks_package,
                        help=f"importable package with the NETWORKS dict (default: {networks_package})")
    for option in network_options:
        kind = argparse.BooleanOptionalAction if option.type is bool else "store"
        parser.add_argument(f"--{option.name}", action=kind, type=None if option.type is bool else option.type,
                            default=option.default, help=f"{option.help} (default: {option.default})")
    return parser


def networks_of(package):
    """(NETWORKS, the options they declare, the PRETRAINED weights of some) of ``package``; ValueError when it has
    no NETWORKS."""
    try:
        module = importlib.import_module(package)
        return module.NETWORKS, tuple(getattr(module, "OPTIONS", ())), getattr(module, "PRETRAINED", {})
    except (ImportError, AttributeError) as error:
        raise ValueError(f"no NETWORKS dict in package '{package}' ({error}); pass --networks_package") from None


def main(argv=None, networks_package=None, prog="python -m library.hub.write_module") -> int:
    """Export the chosen network or Keras application; print the module directory, or a one-line error."""
    use_graph_mode()
    package_flag = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    package_flag.add_argument("--networks_package")
    package = package_flag.parse_known_args(argv)[0].networks_package or networks_package
    try:
        networks, network_options, pretrained = networks_of(package) if package else ({}, (), {})
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    parser = parser_of(prog, package, network_options)
    args = parser.parse_args(argv)
    if bool(args.keras_application) != bool(args.weights):
        parser.error("--weights goes with --keras_application (and it needs them)")
    if args.alpha is not None and not args.keras_application:
        parser.error("--alpha goes with --keras_application (a network's width is one of its own flags)")
    if args.network and args.network not in networks:
        parser.error(f"unknown network '{args.network}'; known: {', '.join(sorted(networks)) or 'none without --networks_package'}")
    for option in network_options:
        value = getattr(args, option.name)
        if option.valid is not None and value not in option.valid:
            parser.error(f"argument --{option.name}: {value} is not a valid {option.type.__name__} {option.valid}")
    try:
        if args.keras_application:
            keras_application.export(args.keras_application, args.weights, args.image_size, args.output,
                                     alpha=args.alpha)
        else:
            params = {"image_size": args.image_size, **{option.name: getattr(args, option.name) for option in network_options}}
            weights = pretrained.get(args.network)
            hub_module.export_spec(hub_module.create_spec(networks[args.network], args.image_size, params), args.output,
                        weights.values() if weights else None)
    except (ValueError, tf.errors.OpError) as error:
        print(f"error: {' '.join(str(error).split())}", file=sys.stderr)
        return 1
    print(args.output)
    return 0




if __name__ == "__main__":
    sys.exit(main())
